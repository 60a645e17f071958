//! Serving NATS: the accept loop of the listener, which hands every connection to
//! [`super::connection::serve`] (with the TLS upgrade after INFO while a certificate is set).
//!
//! The top of the NATS front end: it spawns the connections, and the connections read the
//! state they share from [`super::server`] (never from here), so the imports run one way:
//! `listen` → `connection` → `server`.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::server::NatsServer;

impl NatsServer {
    /// Accepts connections until `shutdown`, then waits for them to close. While
    /// [`NatsServer::tls`] holds a certificate, every client must upgrade to TLS right after
    /// INFO (`tls_required`).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let server = Arc::clone(&self);
        crate::listener::accept_loop(
            listener,
            "NATS",
            Arc::clone(&self.admission),
            &self.tasks,
            &shutdown,
            |stream, peer, permit| {
                connection::serve(
                    Arc::clone(&server),
                    stream,
                    server.tls.current(),
                    peer,
                    permit,
                    shutdown.clone(),
                )
            },
        )
        .await;
    }
}
