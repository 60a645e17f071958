//! The MQTT server: listener, session registry, retained store, publishing, wills, session
//! expiry, and snapshots of persistent sessions and retained messages across restarts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edge_log::{Destination, Log, Source};
use edge_proto::mqtt::QoS;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection;
use super::retained::RetainedStore;
use super::session::{Registry, Session, SessionSnapshot, SubscriptionRecord};
use crate::config::MqttSection;
use crate::hub::{Hub, Mailbox, SubEntry};
use crate::ingest::{self, Publisher};
use crate::message::{Message, now_ms};
use crate::metrics::front::{FrontMetrics, Protocol, inc};
use crate::route::RouteTable;
use crate::router::Filter;
use crate::state_file::{self, StateFileError};

/// How often persistent sessions and retained messages are snapshotted when they changed.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired offline sessions are removed.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
const SESSIONS_MAGIC: &[u8; 8] = b"EBSESS01";
const RETAINED_MAGIC: &[u8; 8] = b"EBRETN01";

/// What is saved in `sessions.bin`.
#[derive(Debug, Serialize, Deserialize)]
struct SessionsFile {
    sessions: Vec<SessionSnapshot>,
}

/// What is saved in `retained.bin`.
#[derive(Debug, Serialize, Deserialize)]
struct RetainedFile {
    messages: Vec<Message>,
}

/// Errors while starting the MQTT server.
#[derive(Debug, thiserror::Error)]
pub enum MqttStartError {
    /// A state file could not be read.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// A state file could not be decoded.
    #[error("state file {path}: cannot decode: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: postcard::Error,
    },
}

/// The shared state of the MQTT front end.
#[derive(Debug)]
pub struct MqttServer {
    /// `[mqtt]` settings; a reload replaces them for connections made afterwards.
    settings: RwLock<Arc<MqttSection>>,
    /// Subscriptions of all protocols.
    pub hub: Arc<Hub>,
    /// Sessions by client id.
    pub sessions: Registry,
    /// Retained messages.
    pub retained: RetainedStore,
    /// The event log routed publishes go to.
    pub log: Log,
    /// Which publishes are stored, and where they go upstream.
    pub routes: Arc<RouteTable>,
    /// Counters (shared with the sessions, which count their dropped deliveries).
    pub metrics: Arc<FrontMetrics>,
    state_dir: PathBuf,
    changes: AtomicU64,
    client_ids: AtomicU64,
    tasks: TaskTracker,
    /// The TLS listener's certificate (replaced by a reload).
    pub tls: crate::tls::AcceptorCell,
}

impl MqttServer {
    /// Creates the server and restores persistent sessions and retained messages from `state_dir`.
    pub fn open(
        settings: MqttSection,
        hub: Arc<Hub>,
        log: Log,
        routes: Arc<RouteTable>,
        state_dir: PathBuf,
    ) -> Result<Arc<MqttServer>, MqttStartError> {
        let server = Arc::new(MqttServer {
            retained: RetainedStore::new(settings.max_retained),
            settings: RwLock::new(Arc::new(settings)),
            hub,
            sessions: Registry::new(1),
            log,
            routes,
            metrics: Arc::new(FrontMetrics::new(Protocol::Mqtt)),
            state_dir,
            changes: AtomicU64::new(0),
            client_ids: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            tls: crate::tls::AcceptorCell::default(),
        });
        server.restore()?;
        Ok(server)
    }

    fn sessions_path(&self) -> PathBuf {
        self.state_dir.join("sessions.bin")
    }

    fn retained_path(&self) -> PathBuf {
        self.state_dir.join("retained.bin")
    }

    fn restore(&self) -> Result<(), MqttStartError> {
        let decode_error = |path: PathBuf| move |source| MqttStartError::Decode { path, source };
        if let Some(body) = state_file::load(&self.retained_path(), RETAINED_MAGIC)? {
            let file: RetainedFile =
                postcard::from_bytes(&body).map_err(decode_error(self.retained_path()))?;
            let count = file.messages.len();
            self.retained.restore(file.messages);
            tracing::info!(count, "restored retained messages");
        }
        if let Some(body) = state_file::load(&self.sessions_path(), SESSIONS_MAGIC)? {
            let file: SessionsFile =
                postcard::from_bytes(&body).map_err(decode_error(self.sessions_path()))?;
            let count = file.sessions.len();
            let now = now_ms();
            for snapshot in file.sessions {
                self.restore_session(snapshot, now);
            }
            tracing::info!(count, "restored persistent MQTT sessions");
        }
        Ok(())
    }

    fn restore_session(&self, snapshot: SessionSnapshot, now: u64) {
        let session = Arc::new(Session::new(
            self.sessions.next_key(),
            snapshot.client_id.clone(),
            self.settings().max_queued_messages,
            Arc::clone(&self.metrics),
        ));
        {
            let mut state = session.lock();
            state.expiry_secs = snapshot.expiry_secs;
            // A session that was online when the broker stopped went offline then.
            state.disconnected_at_ms = Some(snapshot.disconnected_at_ms.unwrap_or(now));
            for (id, released, delivery) in snapshot.inflight {
                state.inflight.insert(
                    id,
                    super::session::Outbound {
                        delivery: delivery.into_delivery(),
                        released,
                    },
                );
                state.last_packet_id = state.last_packet_id.max(id);
            }
            state.queue = snapshot
                .queue
                .into_iter()
                .map(|d| d.into_delivery())
                .collect();
            state.inbound_qos2 = snapshot.inbound_qos2.into_iter().collect();
        }
        let max_levels = self.settings().max_topic_levels;
        for (text, record) in snapshot.subscriptions {
            let Some((filter, group)) = parse_subscription(&text, max_levels) else {
                tracing::warn!(
                    client_id = %snapshot.client_id,
                    "saved subscription is not a valid filter within mqtt.max_topic_levels ({max_levels}); dropped"
                );
                continue;
            };
            self.hub.subscribe(
                &filter,
                group.as_deref(),
                session.key,
                sub_entry(&session, record),
            );
            session.lock().subscriptions.insert(text, record);
        }
        self.sessions.lock().insert(snapshot.client_id, session);
    }

    /// The current `[mqtt]` settings (a connection keeps the ones it started with).
    pub fn settings(&self) -> Arc<MqttSection> {
        Arc::clone(&self.settings.read())
    }

    /// Where an MQTT publish by `client_id` on `topic` goes upstream; `None`: not stored.
    pub fn destination(&self, topic: &str, client_id: &str) -> Option<Destination> {
        self.routes.decide(Source::Mqtt, topic, client_id)
    }

    /// A fresh client id for a client that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        let n = self.client_ids.fetch_add(1, Ordering::Relaxed);
        format!("edge-{:x}-{n}", now_ms())
    }

    /// Notes that persistent session state changed (subscriptions, expiry).
    pub fn sessions_changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Delivers a message to local subscribers and updates the retained store.
    pub fn publish_local(&self, message: &Arc<Message>) {
        if message.retain && !self.retained.set(message) {
            tracing::warn!(topic = %message.topic, "retained message not kept: mqtt.max_retained reached");
        }
        self.hub.publish(message);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Finds or creates the session for `client_id` and attaches a connection to it.
    /// Returns the session, whether it was present (resumed), and the connection's generation.
    pub fn attach_session(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry_secs: u32,
        kick: CancellationToken,
    ) -> (Arc<Session>, bool, u64) {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        let (session, present) = match existing {
            // A session with expiry 0 ends with its connection (MQTT 5 §3.1.2.11.2, 3.1.1
            // clean session): when that connection is still closing (its DISCONNECT not yet
            // processed) or is taken over now, the session must not be resumed.
            Some(old) if clean_start || old.lock().expiry_secs == 0 => {
                // The old session ends now; its connection (if any) is taken over.
                let kick_old = old.lock().kick.take();
                if let Some(kick_old) = kick_old {
                    kick_old.cancel();
                }
                self.end_session_state(&old);
                self.drop_subscriptions(&old);
                (
                    Arc::new(Session::new(
                        self.sessions.next_key(),
                        client_id.to_owned(),
                        self.settings().max_queued_messages,
                        Arc::clone(&self.metrics),
                    )),
                    false,
                )
            }
            Some(old) => {
                {
                    let mut state = old.lock();
                    if let Some(kick_old) = state.kick.take() {
                        kick_old.cancel();
                    }
                    // Reconnected within the will delay: the will is not sent (MQTT 5 §3.1.3.2.2).
                    if let Some(will) = state.pending_will.take() {
                        will.abort.cancel();
                    }
                }
                (old, true)
            }
            None => (
                Arc::new(Session::new(
                    self.sessions.next_key(),
                    client_id.to_owned(),
                    self.settings().max_queued_messages,
                    Arc::clone(&self.metrics),
                )),
                false,
            ),
        };
        let generation = {
            let mut state = session.lock();
            state.generation += 1;
            state.online = true;
            state.kick = Some(kick);
            state.expiry_secs = expiry_secs;
            state.disconnected_at_ms = None;
            state.generation
        };
        sessions.insert(client_id.to_owned(), Arc::clone(&session));
        drop(sessions);
        self.sessions_changed();
        (session, present, generation)
    }

    /// Detaches a connection: the session ends (expiry 0) or waits offline for the client.
    pub fn detach_session(&self, session: &Arc<Session>, generation: u64) {
        let end = {
            let mut state = session.lock();
            if state.generation != generation {
                return; // a newer connection owns the session now
            }
            state.online = false;
            state.kick = None;
            state.queue.retain(|d| d.qos != QoS::AtMostOnce);
            state.disconnected_at_ms = Some(now_ms());
            state.expiry_secs == 0
        };
        if end {
            self.end_session(session);
        }
        self.sessions_changed();
    }

    /// Marks a session ended; a will waiting for its delay is sent now (the session ended first).
    fn end_session_state(&self, session: &Session) {
        let mut state = session.lock();
        state.ended = true;
        if let Some(will) = state.pending_will.take() {
            will.fire.cancel();
        }
    }

    fn end_session(&self, session: &Arc<Session>) {
        self.end_session_state(session);
        let mut sessions = self.sessions.lock();
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
        }
        drop(sessions);
        self.drop_subscriptions(session);
    }

    fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters: Vec<String> = session.lock().subscriptions.keys().cloned().collect();
        for text in filters {
            self.unsubscribe_one(session, &text);
        }
    }

    /// Removes one subscription (full filter text, maybe `$share/...`); returns whether it existed.
    pub fn unsubscribe_one(&self, session: &Session, text: &str) -> bool {
        let existed = session.lock().subscriptions.remove(text).is_some();
        // Unbounded: a subscription made under a higher limit before a reload must still go.
        if let Some((filter, group)) = parse_subscription(text, usize::MAX) {
            self.hub.unsubscribe(&filter, group.as_deref(), session.key);
        }
        existed
    }

    /// Publishes the will of the connection `generation` now, or after `delay_secs` unless
    /// the client comes back first; the delay never outlasts the session.
    pub fn schedule_will(
        self: &Arc<Self>,
        session: &Arc<Session>,
        generation: u64,
        message: Message,
        delay_secs: u32,
    ) {
        let pending = {
            let mut state = session.lock();
            let delay = if state.ended {
                0
            } else {
                delay_secs.min(state.expiry_secs)
            };
            if delay == 0 {
                None
            } else if state.generation != generation {
                // The client is already back on a new connection: the delayed will is void.
                return;
            } else {
                let will = super::session::PendingWill::default();
                state.pending_will = Some(will.clone());
                Some((will, delay))
            }
        };
        let client_id: Arc<str> = Arc::from(session.client_id.as_str());
        let Some((will, delay)) = pending else {
            self.publish_will(message, client_id);
            return;
        };
        let server = Arc::clone(self);
        self.tasks.spawn(async move {
            tokio::select! {
                _ = will.abort.cancelled() => {}
                _ = will.fire.cancelled() => server.publish_will(message, client_id),
                _ = tokio::time::sleep(Duration::from_secs(u64::from(delay))) => server.publish_will(message, client_id),
            }
        });
    }

    /// Publishes a will through the ingest path of every publish: the permission check, the
    /// route decision (with the client's id, for `{client_id}` keys), the log (its own
    /// one-record queue: the connection is gone), local delivery once written.
    fn publish_will(self: &Arc<Self>, mut message: Message, client_id: Arc<str>) {
        let publisher = Publisher {
            source: Source::Mqtt,
            client_id: &client_id,
        };
        if let Err(denied) = ingest::check_publish(&publisher, &message.topic) {
            self.metrics.denied(&denied);
            tracing::info!(client_id = %client_id, "will not published: {denied}");
            return;
        }
        message.received_ms = now_ms();
        let message = Arc::new(message);
        tracing::debug!(topic = %message.topic, "publishing will");
        if let Some(destination) = self.destination(&message.topic, &client_id) {
            let server = Arc::clone(self);
            self.tasks.spawn(async move {
                let record = ingest::record::mqtt(&message, client_id, destination);
                match ingest::queue::ingest_one(&server.log, record).await {
                    Ok(_) => {
                        inc(&server.metrics.stored);
                        server.publish_local(&message);
                    }
                    Err(err) => {
                        inc(&server.metrics.refused);
                        tracing::warn!(topic = %message.topic, "will not stored: {err}");
                    }
                }
            });
        } else {
            self.publish_local(&message);
        }
    }

    /// Accepts connections on `listener` (plain MQTT) and, if given, on `tls_listener` (with the
    /// certificate in [`MqttServer::tls`]) until `shutdown`, then waits for them to close and
    /// saves state. Both count towards `max_connections`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls_listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) {
        let background = self.spawn_background(shutdown.clone());
        let permits = Arc::new(Semaphore::new(self.settings().max_connections));
        let plain = crate::listener::accept_loop(
            listener,
            "MQTT",
            Arc::clone(&permits),
            &self.tasks,
            &shutdown,
            |stream, peer, permit| {
                let (server, shutdown) = (Arc::clone(&self), shutdown.clone());
                async move {
                    let halves = crate::listener::plain(stream);
                    connection::serve(server, halves, peer, permit, shutdown).await;
                }
            },
        );
        let secure = async {
            let Some(listener) = tls_listener else {
                return;
            };
            crate::listener::accept_loop(
                listener,
                "MQTT over TLS",
                permits,
                &self.tasks,
                &shutdown,
                |stream, peer, permit| {
                    let (server, shutdown) = (Arc::clone(&self), shutdown.clone());
                    let acceptor = self.tls.current();
                    async move {
                        let Some(acceptor) = acceptor else {
                            return;
                        };
                        let deadline = server.settings().connect_timeout.0;
                        match crate::listener::tls(&acceptor, stream, deadline).await {
                            Ok(halves) => {
                                connection::serve(server, halves, peer, permit, shutdown).await;
                            }
                            Err(err) => {
                                inc(&server.metrics.tls_handshake_failures);
                                tracing::info!(%peer, "MQTT over TLS: handshake failed: {err}");
                            }
                        }
                    }
                },
            )
            .await;
        };
        tokio::join!(plain, secure);
        let _ = background.await;
        if let Err(err) = self.save() {
            tracing::error!("saving MQTT state at shutdown failed: {err}");
        }
    }

    fn spawn_background(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let mut snapshot = tokio::time::interval(SNAPSHOT_INTERVAL);
            let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
            let mut saved_at = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = snapshot.tick() => {
                        let changes = server.changes.load(Ordering::Relaxed);
                        if changes != saved_at || server.retained.is_dirty() {
                            saved_at = changes;
                            let saver = Arc::clone(&server);
                            match tokio::task::spawn_blocking(move || saver.save()).await {
                                Ok(Ok(())) => {}
                                Ok(Err(err)) => tracing::error!("saving MQTT state failed: {err}"),
                                Err(err) => tracing::error!("saving MQTT state panicked: {err}"),
                            }
                        }
                    }
                    _ = sweep.tick() => server.expire_sessions(),
                }
            }
        })
    }

    /// Removes offline sessions whose expiry interval has passed.
    pub fn expire_sessions(&self) {
        let now = now_ms();
        let expired: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .values()
            .filter(|session| {
                let state = session.lock();
                !state.online
                    && state.expiry_secs != u32::MAX
                    && state.disconnected_at_ms.is_some_and(|at| {
                        now.saturating_sub(at) >= u64::from(state.expiry_secs) * 1000
                    })
            })
            .cloned()
            .collect();
        for session in expired {
            tracing::debug!(client_id = %session.client_id, "session expired");
            self.end_session(&session);
            self.sessions_changed();
        }
    }

    /// Writes persistent sessions and retained messages to their state files.
    pub fn save(&self) -> Result<(), StateFileError> {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        let file = SessionsFile {
            sessions: sessions
                .iter()
                .filter(|s| s.lock().expiry_secs > 0)
                .map(|s| SessionSnapshot::capture(s))
                .collect(),
        };
        let body = postcard::to_allocvec(&file).unwrap_or_default();
        state_file::save(&self.sessions_path(), SESSIONS_MAGIC, &body)?;
        let retained = RetainedFile {
            messages: self.retained.snapshot(),
        };
        let body = postcard::to_allocvec(&retained).unwrap_or_default();
        state_file::save(&self.retained_path(), RETAINED_MAGIC, &body)
    }
}

impl crate::reload::Reload for MqttServer {
    fn reload(&self, config: &crate::config::Config) {
        // Limits apply to connections made from now on; the listener, the connection cap and
        // the retained-store size are fixed at start (the reloader reports those as needing a
        // restart).
        *self.settings.write() = Arc::new(config.mqtt.clone());
        // The TLS listener itself is fixed at start; its certificate is read again.
        let m = &config.mqtt;
        if m.tls_listen.is_some() {
            self.tls.reload(
                "MQTT",
                m.tls_cert.as_deref(),
                m.tls_key.as_deref(),
                m.tls_client_ca.as_deref(),
            );
        }
    }
}

/// Splits `$share/group/filter` or a plain filter into the hub's filter and share group.
fn parse_subscription(text: &str, max_levels: usize) -> Option<(Filter, Option<String>)> {
    match edge_proto::mqtt::topic::parse_shared(text) {
        Ok(Some(shared)) => Filter::mqtt_within(shared.filter, max_levels)
            .ok()
            .map(|f| (f, Some(shared.group.to_owned()))),
        Ok(None) => Filter::mqtt_within(text, max_levels)
            .ok()
            .map(|f| (f, None)),
        Err(_) => None,
    }
}

fn sub_entry(session: &Arc<Session>, record: SubscriptionRecord) -> SubEntry {
    SubEntry {
        qos: record.qos,
        no_local: record.no_local,
        retain_as_published: record.retain_as_published,
        id: record.id,
        mailbox: Arc::clone(session) as Arc<dyn Mailbox>,
    }
}
