//! Serving MQTT: the accept loops of the listeners (plain, TLS, WebSockets, WebSockets over
//! TLS) that hand every connection to [`super::connection::serve`], and the background task
//! that runs beside them until the stop (journal compaction, session expiry, session owners
//! saved).
//!
//! The top of the MQTT front end: it spawns the connections, and the connections read the
//! state they share from [`super::server`] (never from here), so the imports run one way:
//! `listen` → `connection` → `server`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::park::ParkingLot;
use super::server::MqttServer;
use crate::metrics::front::inc;

/// How often the state journal is checked for compaction.
const COMPACTION_CHECK: Duration = Duration::from_secs(1);
/// How often expired offline sessions are removed.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// The bound listeners of the MQTT front end.
#[derive(Debug)]
pub struct Listeners {
    /// Plain MQTT (`mqtt.listen`).
    pub plain: TcpListener,
    /// MQTT over TLS (`mqtt.tls_listen`).
    pub tls: Option<TcpListener>,
    /// MQTT over WebSockets (`mqtt.ws_listen`).
    pub ws: Option<TcpListener>,
    /// MQTT over WebSockets over TLS (`mqtt.ws_tls_listen`).
    pub ws_tls: Option<TcpListener>,
}

impl MqttServer {
    /// Accepts connections on every listener in `listeners` (plain MQTT; TLS and WebSockets,
    /// plain or over TLS, with the certificate in [`MqttServer::tls`]) until `shutdown`, then
    /// waits for them to close and saves state. All count towards `max_connections`.
    pub async fn serve(self: Arc<Self>, listeners: Listeners, shutdown: CancellationToken) {
        let background = self.spawn_background(shutdown.clone());
        let parking = match ParkingLot::open() {
            Ok((lot, thread)) => {
                let _ = self.parking.set(lot);
                Some(thread)
            }
            Err(err) => {
                tracing::warn!(
                    "idle MQTT connections will not be parked (mqtt.park_idle_after): {err}"
                );
                None
            }
        };
        let Listeners {
            plain: listener,
            tls: tls_listener,
            ws: ws_listener,
            ws_tls: ws_tls_listener,
        } = listeners;
        let plain = crate::listener::accept_loop(
            listener,
            "MQTT",
            Arc::clone(&self.admission),
            &self.tasks,
            &shutdown,
            |stream, peer, pending| self.serve_plain(stream, peer, pending, shutdown.clone()),
        );
        let secure = async {
            let Some(listener) = tls_listener else {
                return;
            };
            crate::listener::accept_loop(
                listener,
                "MQTT over TLS",
                Arc::clone(&self.admission),
                &self.tasks,
                &shutdown,
                |stream, peer, pending| {
                    let (server, shutdown) = (Arc::clone(&self), shutdown.clone());
                    let acceptor = self.tls.current();
                    async move {
                        let Some((stream, certificate)) = server
                            .tls_handshake(acceptor, stream, peer, &pending, "MQTT over TLS")
                            .await
                        else {
                            return;
                        };
                        connection::serve(server, stream, peer, pending, shutdown, certificate)
                            .await;
                    }
                },
            )
            .await;
        };
        let websockets = self.accept_websockets(ws_listener, false, &shutdown);
        let secure_websockets = self.accept_websockets(ws_tls_listener, true, &shutdown);
        // The accept loops stop taking connections and wait for the ones they made: this
        // tells those to leave.
        let stop = self.stop_connections_on(&shutdown);
        tokio::join!(plain, secure, websockets, secure_websockets, stop);
        let _ = background.await;
        if let Some(thread) = parking {
            // Every connection is closed: none is parked, none parks again.
            if let Some(lot) = self.parking.get() {
                lot.stop();
            }
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.save_owners();
        if let Some(journal) = self.journal() {
            let closed = tokio::task::spawn_blocking(move || journal.close()).await;
            match closed {
                Ok(Ok(())) => tracing::debug!("MQTT state journal synced and closed"),
                Ok(Err(err)) => tracing::error!("closing the MQTT state journal: {err}"),
                Err(err) => tracing::error!("closing the MQTT state journal panicked: {err}"),
            }
        }
    }

    /// The task of one plain MQTT connection (what the listener spawns).
    ///
    /// The connection's future itself, not an `async` block around it: a block would keep
    /// what it captured (the stream, the peer address, the pending place: ~130 bytes) in
    /// every connection's task for its whole life.
    pub fn serve_plain(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        pending: crate::admission::Pending,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        connection::serve(
            Arc::clone(self),
            crate::listener::plain_stream(stream),
            peer,
            pending,
            shutdown,
            None,
        )
    }

    /// Accepts MQTT over WebSockets on `listener` (if any), over TLS with the certificate in
    /// [`MqttServer::tls`] when `tls`.
    async fn accept_websockets(
        self: &Arc<Self>,
        listener: Option<TcpListener>,
        tls: bool,
        shutdown: &CancellationToken,
    ) {
        let Some(listener) = listener else {
            return;
        };
        let protocol = if tls {
            "MQTT over WebSockets over TLS"
        } else {
            "MQTT over WebSockets"
        };
        crate::listener::accept_loop(
            listener,
            protocol,
            Arc::clone(&self.admission),
            &self.tasks,
            shutdown,
            |stream, peer, pending| {
                let (server, shutdown) = (Arc::clone(self), shutdown.clone());
                let acceptor = self.tls.current();
                async move {
                    let (stream, certificate) = if tls {
                        match server
                            .tls_handshake(acceptor, stream, peer, &pending, protocol)
                            .await
                        {
                            Some(done) => done,
                            None => return,
                        }
                    } else {
                        (crate::listener::plain_stream(stream), None)
                    };
                    let settings = server.settings();
                    let ws = crate::websocket::WsSettings {
                        path: settings.ws_path.clone(),
                        max_packet: settings.max_packet_size.bytes() as usize,
                        deadline: settings.connect_timeout.0,
                    };
                    // Evicted (pending connections over their cap) while still upgrading: gone.
                    let evicted = pending.eviction();
                    let upgraded = tokio::select! {
                        upgraded = Box::pin(crate::websocket::upgrade(stream, &ws)) => upgraded,
                        _ = evicted.cancelled() => return,
                    };
                    match upgraded {
                        Ok(upgraded) => {
                            let (stream, pump) = upgraded.into_stream();
                            let serve = connection::serve(
                                server,
                                stream,
                                peer,
                                pending,
                                shutdown,
                                certificate,
                            );
                            tokio::join!(serve, pump);
                        }
                        Err(err) => {
                            inc(&server.metrics.ws_handshake_failures);
                            tracing::info!(%peer, "{protocol}: {err}");
                        }
                    }
                }
            },
        )
        .await;
    }

    /// The TLS handshake of a new connection within `connect_timeout`: its halves and the
    /// client's certificate identity; `None` (counted and logged) when it failed, or silently
    /// when `pending` was evicted meanwhile (pending connections over their cap).
    async fn tls_handshake(
        &self,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        pending: &crate::admission::Pending,
        protocol: &str,
    ) -> Option<(
        crate::listener::Stream,
        Option<crate::auth::PeerCertificate>,
    )> {
        let acceptor = acceptor?;
        let deadline = self.settings().connect_timeout.0;
        let evicted = pending.eviction();
        // Boxed: the handshake's state lasts only as long as the handshake, while the
        // connection's task is allocated at the size of its largest state.
        let handshake = tokio::select! {
            handshake = Box::pin(crate::listener::tls_with_peer(&acceptor, stream, deadline)) => handshake,
            _ = evicted.cancelled() => return None,
        };
        match handshake {
            Ok((stream, certificate)) => {
                let certificate = certificate.map(|der| crate::auth::PeerCertificate {
                    identity: crate::auth::cert::identity(&der),
                });
                Some((stream, certificate))
            }
            Err(err) => {
                inc(&self.metrics.tls_handshake_failures);
                tracing::info!(%peer, "{protocol}: TLS handshake failed: {err}");
                None
            }
        }
    }

    fn spawn_background(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let mut compaction = tokio::time::interval(COMPACTION_CHECK);
            let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = compaction.tick() => {
                        if server.journal().is_some_and(|j| j.wants_checkpoint()) {
                            let compactor = Arc::clone(&server);
                            if let Err(err) = tokio::task::spawn_blocking(move || compactor.compact_if_due()).await {
                                tracing::error!("compacting the MQTT state journal panicked: {err}");
                            }
                        }
                    }
                    _ = sweep.tick() => {
                        server.expire_sessions();
                        server.save_owners();
                    }
                }
            }
        })
    }

    /// Saves who owns each session (when it changed), forgetting owners of ended sessions.
    fn save_owners(&self) {
        let sessions = self.sessions.lock();
        self.auth.save_owners(|id| sessions.contains_key(id));
    }
}
