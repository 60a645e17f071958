//! The MQTT server's state, shared by all its connections: settings, session registry,
//! retained store, publishing, wills, session expiry, the flag and the task tracker of the
//! stop, the `$SYS` tree, and the state journal behind persistent sessions and retained
//! messages (opening, restore and checkpoints in [`super::persist`]).
//!
//! Connections ([`super::connection`]) and [`super::persist`] build on this file, and it
//! imports neither: the accept loops that spawn connections are [`super::listen`]'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use edge_log::{Destination, Log, Source};
use edge_proto::mqtt::QoS;
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{Limit, LimitCounters};
use super::park::ParkingLot;
use super::retained::RetainedStore;
use super::session::{QueueLimits, Registry, Session, SessionLog, SubscriptionRecord};
use crate::config::MqttSection;
use crate::hub::{Hub, LocalRoute, Mailbox, SubEntry, Waiting};
use crate::ingest::{self, Publisher};
use crate::message::{Message, now_ms};
use crate::metrics::front::{DropReason, FrontMetrics, Protocol, inc};
use crate::route::RouteTable;
use crate::router::Filter;
use crate::state::record::Record;
use crate::state::{Commit, Journal};

/// Counters of saved state, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct StateMetrics {
    /// State files that could not be loaded and were moved aside.
    pub quarantined: AtomicU64,
    /// Bytes of torn tails cut at startup (writes a power cut interrupted).
    pub torn_bytes: AtomicU64,
    /// Saved sessions, subscriptions, queued deliveries and retained messages not restored
    /// because they exceed the current limits.
    pub restore_dropped: AtomicU64,
}

/// The shared state of the MQTT front end.
#[derive(Debug)]
pub struct MqttServer {
    /// `[mqtt]` settings; a reload replaces them for connections made afterwards.
    settings: RwLock<Arc<MqttSection>>,
    /// The queue limits of `settings`, shared by the sessions made under them (32 bytes in
    /// every session otherwise).
    queue_limits: RwLock<Arc<QueueLimits>>,
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
    /// The bytes of large packets clients are still sending (`max_partial_packet_bytes_total`).
    pub input_pool: Arc<crate::input_pool::InputPool>,
    /// Counters of saved state.
    pub state_metrics: StateMetrics,
    /// Refusals by the session, subscription and retained caps.
    pub limits: LimitCounters,
    /// Seats of logged-in clients and places of connections that have not logged in (sized at
    /// start: a reload does not change them).
    pub admission: Arc<crate::admission::Admission>,
    state_dir: PathBuf,
    journal: OnceLock<Arc<Journal>>,
    client_ids: AtomicU64,
    /// The tasks the stop waits for: connections (spawned by the accept loops of
    /// [`super::listen`] and by [`MqttServer::spawn_connection`]), wills on their way,
    /// parked connections ([`MqttServer::track`]).
    pub(super) tasks: TaskTracker,
    /// Set when the broker stops: every connection leaves at its loop's next turn (see
    /// [`MqttServer::stop_connections`]).
    stopping: AtomicBool,
    /// Where idle connections wait without a task ([`super::park`]); made when serving starts
    /// ([`super::listen`]).
    pub(super) parking: OnceLock<Arc<ParkingLot>>,
    /// The TLS listener's certificate (replaced by a reload).
    pub tls: crate::tls::AcceptorCell,
    /// Users, credentials, permissions and session owners (shared with NATS).
    pub auth: Arc<crate::auth::Auth>,
}

impl MqttServer {
    /// The server's state, without saved state and without a journal: what
    /// [`MqttServer::open`] starts from before it restores `state_dir` ([`super::persist`]).
    pub(super) fn new(
        settings: MqttSection,
        hub: Arc<Hub>,
        log: Log,
        routes: Arc<RouteTable>,
        state_dir: PathBuf,
        auth: Arc<crate::auth::Auth>,
    ) -> MqttServer {
        let metrics = Arc::new(FrontMetrics::new(Protocol::Mqtt));
        MqttServer {
            input_pool: crate::input_pool::InputPool::new(
                "mqtt.max_partial_packet_bytes_total",
                settings.max_partial_packet_bytes_total,
                Arc::clone(&metrics.partial_bytes),
            ),
            retained: RetainedStore::new(
                settings.max_retained,
                settings.max_retained_bytes.bytes(),
            ),
            admission: crate::admission::Admission::new(crate::admission::AdmissionLimits::mqtt(
                &settings,
            )),
            queue_limits: RwLock::new(Arc::new(QueueLimits::of(&settings))),
            settings: RwLock::new(Arc::new(settings)),
            hub,
            sessions: Registry::new(1),
            log,
            routes,
            metrics,
            state_metrics: StateMetrics::default(),
            limits: LimitCounters::default(),
            state_dir,
            journal: OnceLock::new(),
            client_ids: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            stopping: AtomicBool::new(false),
            parking: OnceLock::new(),
            tls: crate::tls::AcceptorCell::default(),
            auth,
        }
    }

    /// Hands the server the state journal [`MqttServer::open`] started (once, before any
    /// connection is served).
    pub(super) fn set_journal(&self, journal: Arc<Journal>) {
        let _ = self.journal.set(journal);
    }

    /// Where the state journal lives.
    pub(super) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The state journal (`None`: it could not be started; state is in memory only).
    pub(super) fn journal(&self) -> Option<Arc<Journal>> {
        self.journal.get().cloned()
    }

    /// A ticket for every recorded change of `session` so far (`None`: it is not persistent
    /// or recorded nothing): what its client is told next waits for it.
    pub fn session_commit(&self, session: &Session) -> Option<Commit> {
        session.lock().log().and_then(SessionLog::commit)
    }

    /// Whether the state journal has a large backlog: connections that wait for a commit
    /// stop reading until theirs is durable.
    pub fn state_backlogged(&self) -> bool {
        self.journal.get().is_some_and(|j| j.backlogged())
    }

    /// Whether a retained message on `topic` of the given weight would be kept now; counts a
    /// refusal.
    pub fn admit_retained(&self, message_topic: &str, weight: u64) -> Result<(), Limit> {
        self.retained
            .admits(message_topic, weight)
            .map_err(|limit| {
                let limit = Limit::from(limit);
                self.limits.refused(limit);
                limit
            })
    }

    /// Whether `session` may add a subscription to `filter` (replacing one it has always
    /// may); counts a refusal.
    pub fn admit_subscription(
        &self,
        session: &Session,
        filter: &str,
        settings: &MqttSection,
    ) -> Result<(), Limit> {
        let state = session.lock();
        if state.subscriptions.contains_key(filter) {
            return Ok(());
        }
        super::limits::admit_subscription(
            state.subscriptions.len(),
            state.subscriptions.bytes(),
            super::limits::subscription_cost(filter),
            settings.max_subscriptions_per_client,
            settings.max_subscription_bytes_per_client.bytes(),
        )
        .inspect_err(|&limit| self.limits.refused(limit))
    }

    /// The current `[mqtt]` settings (a connection keeps the ones it started with).
    pub fn settings(&self) -> Arc<MqttSection> {
        Arc::clone(&self.settings.read())
    }

    /// The queue limits new sessions get (`[mqtt]`'s, as of the last reload).
    pub(super) fn queue_limits(&self) -> Arc<QueueLimits> {
        Arc::clone(&self.queue_limits.read())
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

    /// Delivers a message to local subscribers and updates the retained store. Returns the
    /// ticket of the state changes this caused (deliveries queued for persistent sessions, the
    /// retained message): the publisher's acknowledgement waits for it.
    pub fn publish_local(&self, message: &Arc<Message>) -> Option<Commit> {
        self.publish_local_paced(message, None, None)
    }

    /// As [`Server::publish_local`]; with `waiting`, a QoS 0 delivery to a full session is
    /// handed back there for the publishing connection to wait for room
    /// ([`crate::hub::Hub::publish_paced`]) instead of being dropped; with `route`, the
    /// publisher's [`LocalRoute`] for the message's topic ([`crate::hub::Hub::publish_routed`]).
    pub fn publish_local_paced(
        &self,
        message: &Arc<Message>,
        mut waiting: Option<&mut Vec<Waiting>>,
        route: Option<&LocalRoute>,
    ) -> Option<Commit> {
        let mut publish = || {
            if message.retain
                && let Err(limit) = self.retained.set(message)
            {
                let limit = Limit::from(limit);
                self.limits.refused(limit);
                tracing::debug!(topic = %message.topic, "retained message not kept: mqtt.{} reached", limit.key());
            }
            match route {
                Some(route) => self
                    .hub
                    .publish_routed(route, message, waiting.as_deref_mut()),
                None => match waiting.as_deref_mut() {
                    Some(waiting) => self.hub.publish_paced(message, waiting),
                    None => self.hub.publish(message),
                },
            };
        };
        match self.journal.get() {
            Some(journal) => journal.collect(publish).1,
            None => {
                publish();
                None
            }
        }
    }

    /// A new session for `client_id`, recorded in the journal when it is persistent.
    fn new_session(&self, client_id: &Arc<str>, expiry_secs: u32) -> Arc<Session> {
        let session = Arc::new(Session::new(
            self.sessions.next_key(),
            Arc::clone(client_id),
            self.queue_limits(),
            Arc::clone(&self.metrics),
        ));
        if expiry_secs > 0
            && let Some(journal) = self.journal.get()
        {
            let log = SessionLog::new(Arc::clone(journal), session.key);
            log.record(|enc, sid| {
                enc.record(&Record::SessionOpen {
                    sid,
                    client_id: client_id.to_string(),
                    expiry_secs,
                })
            });
            session.lock().set_log(Some(log));
        }
        session
    }

    /// Finds or creates the session for `client_id` and attaches a connection to it.
    /// Returns the session, whether it was present (resumed), and the connection's
    /// generation; `Err` when a new persistent session would exceed `max_sessions` (counted).
    pub fn attach_session(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_secs: u32,
    ) -> Result<(Arc<Session>, bool, u64), Limit> {
        let mut sessions = self.sessions.lock();
        let existing = sessions.get(client_id).cloned();
        let max = self.settings().max_sessions;
        // Only sessions that outlive their connection count: a clean session lasts as long as
        // its connection, and connections have their own cap.
        let resumable = existing
            .as_ref()
            .is_some_and(|old| !clean_start && old.lock().expiry_secs > 0);
        if expiry_secs > 0
            && !resumable
            && sessions.len() >= max
            && sessions
                .values()
                .filter(|s| s.lock().expiry_secs > 0)
                .count()
                >= max
        {
            self.limits.refused(Limit::Sessions);
            return Err(Limit::Sessions);
        }
        let (session, present) = match existing {
            // A session with expiry 0 ends with its connection (MQTT 5 §3.1.2.11.2, 3.1.1
            // clean session): when that connection is still closing (its DISCONNECT not yet
            // processed) or is taken over now, the session must not be resumed.
            Some(old) if clean_start || old.lock().expiry_secs == 0 => {
                // The old session ends now; its connection (if any) is taken over.
                old.kick();
                self.end_session_state(&old);
                self.drop_subscriptions(&old);
                (self.new_session(client_id, expiry_secs), false)
            }
            Some(old) => {
                {
                    old.kick();
                    let mut state = old.lock();
                    // Reconnected within the will delay: the will is not sent (MQTT 5 §3.1.3.2.2).
                    if let Some(will) = state.take_pending_will() {
                        will.abort.cancel();
                    }
                    match state.log() {
                        // Resumed without expiry: the session no longer outlives the
                        // connection, nor a restart.
                        Some(log) if expiry_secs == 0 => {
                            log.record(|enc, sid| enc.record(&Record::SessionEnd { sid }));
                            state.set_log(None);
                        }
                        Some(log) => {
                            log.record(|enc, sid| enc.record(&Record::Online { sid, expiry_secs }))
                        }
                        None => {}
                    }
                }
                (old, true)
            }
            None => (self.new_session(client_id, expiry_secs), false),
        };
        let generation = {
            let mut state = session.lock();
            state.generation += 1;
            state.online = true;
            state.expiry_secs = expiry_secs;
            state.set_disconnected_at_ms(None);
            state.generation
        };
        sessions.insert(Arc::clone(client_id), Arc::clone(&session));
        drop(sessions);
        Ok((session, present, generation))
    }

    /// Detaches a connection: the session ends (expiry 0) or waits offline for the client.
    pub fn detach_session(&self, session: &Arc<Session>, generation: u64) {
        let end = {
            let mut state = session.lock();
            if state.generation != generation {
                return; // a newer connection owns the session now
            }
            state.online = false;
            state.queue.retain(|d| d.qos != QoS::AtMostOnce);
            let at_ms = now_ms();
            state.set_disconnected_at_ms(Some(at_ms));
            let expiry_secs = state.expiry_secs;
            if expiry_secs > 0
                && let Some(log) = state.log()
            {
                log.record(|enc, sid| {
                    enc.record(&Record::Offline {
                        sid,
                        at_ms,
                        expiry_secs,
                    })
                });
            }
            expiry_secs == 0
        };
        if end {
            self.end_session(session);
        }
    }

    /// Marks a session ended; a will waiting for its delay is sent now (the session ended first).
    /// Deliveries still queued for it will never be sent: they are counted as dropped.
    fn end_session_state(&self, session: &Session) {
        let mut state = session.lock();
        if !state.ended && !state.queue.is_empty() {
            self.metrics
                .dropped_many(DropReason::SessionEnded, state.queue.len() as u64);
        }
        state.ended = true;
        if let Some(will) = state.take_pending_will() {
            will.fire.cancel();
        }
        if let Some(log) = state.log() {
            log.record(|enc, sid| enc.record(&Record::SessionEnd { sid }));
            state.set_log(None);
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
                state.set_pending_will(will.clone());
                Some((will, delay))
            }
        };
        let client_id = Arc::clone(&session.client_id);
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

    /// Publishes a will through the ingest path of every publish: the permission check (the
    /// ACL was checked when the CONNECT carrying the will was accepted), the route decision
    /// (with the client's id, for `{client_id}` keys), the log (its own one-record queue: the
    /// connection is gone), local delivery once written.
    fn publish_will(self: &Arc<Self>, mut message: Message, client_id: Arc<str>) {
        let mut publisher = Publisher {
            source: Source::Mqtt,
            client_id: &client_id,
            permissions: None,
        };
        if let Err(denied) = ingest::check_publish(&mut publisher, &message.topic) {
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
                match ingest::queue::ingest_one(&server.log, &record).await {
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

    /// Once `shutdown` is cancelled, tells every logged-in connection to leave
    /// ([`MqttServer::stop_connections`]).
    pub async fn stop_connections_on(&self, shutdown: &CancellationToken) {
        shutdown.cancelled().await;
        self.stop_connections();
    }

    /// Tells every logged-in connection to leave (the broker stops): each drains the acks
    /// that become durable in time and closes, v5 clients told "server shutting down". A
    /// flag, read by each connection's loop every turn, and a wake per session, instead of a
    /// child cancellation token per connection; one that logs in later sees the flag at its
    /// loop's first turn (sessions attach under the registry's lock, taken here after the
    /// flag is set).
    pub fn stop_connections(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            // Reaches the loop's `Notified` whether it waits already or not: made before the
            // loop reads the flag.
            session.wake.notify_waiters();
            // A parked connection checked the flag under this lock before it parked.
            let parked = session.lock().take_parked(None);
            if let Some(parked) = parked {
                parked.resume();
            }
        }
    }

    /// Where idle connections park, once serving started ([`super::park`]).
    pub fn parking(&self) -> Option<&Arc<ParkingLot>> {
        self.parking.get()
    }

    /// Connections parked now (`edge_mqtt_connections_parked`).
    pub fn parked(&self) -> usize {
        self.parking.get().map_or(0, |lot| lot.len())
    }

    /// Counts a parked connection as running for the drain at stop ([`super::park`]).
    pub fn track(&self) -> tokio_util::task::task_tracker::TaskTrackerToken {
        self.tasks.token()
    }

    /// Runs a logged-in connection's loop (after its login, or resumed after parking) on
    /// `runtime`, tracked like every connection task.
    pub fn spawn_connection(
        &self,
        connection: impl Future<Output = ()> + Send + 'static,
        runtime: &tokio::runtime::Handle,
    ) {
        self.tasks.spawn_on(connection, runtime);
    }

    /// Whether the broker is stopping ([`MqttServer::stop_connections`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Publishes the `$SYS` topics every `mqtt.sys_interval` (if not zero) until `shutdown`;
    /// `backlog` reads the `$SYS/edge/backlog/...` values.
    pub fn spawn_sys_tree(
        self: &Arc<Self>,
        backlog: super::sys::BacklogSource,
        shutdown: CancellationToken,
    ) {
        let Some(period) = super::sys::period(self.settings().sys_interval.0) else {
            return;
        };
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let mut tree = super::sys::SysTree::new(std::time::Instant::now());
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let reading = server.sys_reading();
                for (topic, payload) in
                    tree.round(std::time::Instant::now(), reading, Some(backlog()))
                {
                    server.publish_local(&super::sys::message(topic, payload));
                }
            }
        });
    }

    /// The counters the `$SYS/broker` topics show.
    fn sys_reading(&self) -> super::sys::Reading {
        let disconnected = self
            .sessions
            .lock()
            .values()
            .filter(|session| !session.lock().online)
            .count();
        super::sys::Reading {
            connected: self.metrics.connections.load(Ordering::Relaxed).max(0) as u64,
            disconnected: disconnected as u64,
            received: self.metrics.received_total(),
            sent: self.metrics.sent_total(),
            connections: self.metrics.connections_total.load(Ordering::Relaxed),
        }
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
                    && state.disconnected_at_ms().is_some_and(|at| {
                        now.saturating_sub(at) >= u64::from(state.expiry_secs) * 1000
                    })
            })
            .cloned()
            .collect();
        for session in expired {
            tracing::debug!(client_id = %session.client_id, "session expired");
            self.end_session(&session);
        }
    }
}

impl crate::reload::Reload for MqttServer {
    fn reload(&self, config: &crate::config::Config) {
        // Limits apply to connections made from now on; the listener, the connection cap and
        // the retained-store size are fixed at start (the reloader reports those as needing a
        // restart).
        *self.settings.write() = Arc::new(config.mqtt.clone());
        *self.queue_limits.write() = Arc::new(QueueLimits::of(&config.mqtt));
        self.input_pool
            .set_limit(config.mqtt.max_partial_packet_bytes_total);
        // The TLS listener itself is fixed at start; its certificate is read again.
        let m = &config.mqtt;
        if m.tls_listen.is_some() || m.ws_tls_listen.is_some() {
            self.tls.reload(
                "MQTT",
                m.tls_cert.as_deref(),
                m.tls_key.as_deref(),
                m.tls_client_ca.as_deref(),
            );
        }
    }
}

/// The topic filter of a subscription's text (without any `$share/group/` prefix).
pub(super) fn filter_text(text: &str) -> &str {
    match edge_proto::mqtt::topic::parse_shared(text) {
        Ok(Some(shared)) => shared.filter,
        _ => text,
    }
}

/// Splits `$share/group/filter` or a plain filter into the hub's filter and share group.
pub(super) fn parse_subscription(
    text: &str,
    max_levels: usize,
) -> Option<(Filter, Option<String>)> {
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

/// The hub's entry for a subscription of `session`.
pub(super) fn sub_entry(session: &Arc<Session>, record: SubscriptionRecord) -> SubEntry {
    SubEntry {
        qos: record.qos,
        no_local: record.no_local,
        retain_as_published: record.retain_as_published,
        id: record.id,
        mailbox: Arc::clone(session) as Arc<dyn Mailbox>,
    }
}
