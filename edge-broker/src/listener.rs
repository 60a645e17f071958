//! The accept loop both front ends share: bounded connections, one task per connection, and a
//! drain that waits for every connection task at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Accepts connections until `shutdown`, spawning `serve` for each on `tasks`, then closes the
/// listener and waits for every connection task to finish.
///
/// Each connection gets a permit out of `max_connections`, or `None` when the limit is reached,
/// so the protocol can refuse the client in its own words (CONNACK "server busy", `-ERR`).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
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
        let permit = Arc::clone(&permits).try_acquire_owned().ok();
        tasks.spawn(serve(stream, peer, permit));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Writes what is left in `out` and shuts the socket down, giving up after `deadline` (a client
/// that stopped reading must not hold a closing connection open).
pub async fn flush_and_close(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
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
