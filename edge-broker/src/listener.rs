//! The accept loop both front ends share: bounded connections, one task per connection, and a
//! drain that waits for every connection task at shutdown. Connections are served through
//! [`ReadHalf`]/[`WriteHalf`] so plain TCP and TLS look the same to a protocol.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Pending};

/// The reading side of a client connection (plain TCP or TLS).
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing side of a client connection (plain TCP or TLS).
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a plain TCP connection (with Nagle off: protocol messages are small).
pub fn plain(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    (Box::new(reader), Box::new(writer))
}

/// Runs the TLS handshake on a new connection within `deadline`, then splits it.
pub async fn tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> std::io::Result<(ReadHalf, WriteHalf)> {
    tls_with_peer(acceptor, stream, deadline)
        .await
        .map(|(halves, _)| halves)
}

/// [`tls`], also returning the client's (verified) certificate, if it presented one.
pub async fn tls_with_peer(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> std::io::Result<(
    (ReadHalf, WriteHalf),
    Option<rustls_pki_types::CertificateDer<'static>>,
)> {
    let _ = stream.set_nodelay(true);
    let stream = tokio::time::timeout(deadline, acceptor.accept(stream))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {deadline:?}"),
            )
        })??;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned());
    let (reader, writer) = tokio::io::split(stream);
    Ok(((Box::new(reader), Box::new(writer)), peer))
}

/// Accepts connections until `shutdown`, spawning `serve` for each on `tasks`, then closes the
/// listener and waits for every connection task to finish.
///
/// Each connection gets a [`Pending`] ticket of `admission` (shared by listeners that count
/// towards one limit) and trades it for a seat once it logs in; a connection `admission`
/// refuses is closed at once, before anything is read from it (counted in the admission's
/// refusals).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    admission: Arc<Admission>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, Pending) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("{protocol} listener: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match admission.arrive(peer.ip()) {
            Ok(pending) => {
                tasks.spawn(serve(stream, peer, pending));
            }
            Err(refusal) => {
                tracing::debug!(%peer, "{protocol}: connection refused: {refusal}");
                drop(stream);
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Writes what is left in `out` and shuts the socket down, giving up after `deadline` (a client
/// that stopped reading must not hold a closing connection open).
pub async fn flush_and_close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut bytes::BytesMut,
    deadline: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let flush = async {
        while !out.is_empty() {
            if writer.write_buf(out).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let _ = tokio::time::timeout(deadline, flush).await;
}
