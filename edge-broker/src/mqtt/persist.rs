//! How the MQTT server keeps persistent sessions and retained messages across restarts:
//! [`MqttServer::open`], which makes the server and restores them (from the state journal, or
//! migrating the legacy snapshot files) within the limits, the checkpoint every start writes,
//! checkpoints that compact the journal while running, and the metrics of saved state (their
//! counters, [`super::server::StateMetrics`], are a field of the server). The journal itself
//! is [`crate::state`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use edge_log::{FsyncPolicy, Log, StdStorage, Storage};

use super::server::{MqttServer, filter_text, parse_subscription, sub_entry};
use super::session::{Outbound, Session, SessionLog, SubscriptionRecord};
use crate::config::MqttSection;
use crate::hub::Hub;
use crate::message::now_ms;
use crate::metrics::PromText;
use crate::route::RouteTable;
use crate::state::journal::BACKLOG_BYTES;
use crate::state::{Journal, LoadReport, ModelSession, StateModel, replay};

impl MqttServer {
    /// Creates the server and restores persistent sessions and retained messages saved in
    /// `state_dir` (the journal's fsync policy is the log's). Saved state never stops a
    /// start: what cannot be loaded is moved aside, logged and counted.
    pub fn open(
        settings: MqttSection,
        hub: Arc<Hub>,
        log: Log,
        routes: Arc<RouteTable>,
        state_dir: PathBuf,
        auth: Arc<crate::auth::Auth>,
    ) -> Arc<MqttServer> {
        let fsync = log.config().fsync;
        let server = Arc::new(MqttServer::new(settings, hub, log, routes, state_dir, auth));
        if let Some(journal) = server.restore_state(fsync) {
            server.set_journal(journal);
        }
        server
    }

    /// Loads the saved state (nothing in it can fail the start), then starts the journal with
    /// a checkpoint of it. Without a usable journal the broker runs with its state in memory
    /// only, and says so.
    fn restore_state(&self, fsync: FsyncPolicy) -> Option<Arc<Journal>> {
        let storage: Arc<dyn Storage> = Arc::new(StdStorage);
        let dir = self.state_dir().to_owned();
        let (model, report) = replay::load(storage.as_ref(), &dir);
        self.note_load(&report);
        self.restore_model(model);
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let journal = match Journal::create(
            Arc::clone(&storage),
            &dir,
            fsync,
            report.next_generation,
            incarnation,
        ) {
            Ok(journal) => Arc::new(journal),
            Err(err) => {
                tracing::error!(
                    "{err}: persistent sessions and retained messages are kept in memory only until a restart"
                );
                return None;
            }
        };
        for session in self.sessions.lock().values() {
            let mut state = session.lock();
            if state.expiry_secs > 0 {
                state.set_log(Some(SessionLog::new(Arc::clone(&journal), session.key)));
            }
        }
        self.retained.record_to(Arc::clone(&journal));
        self.write_checkpoint(&journal);
        journal.end_checkpoint();
        match journal.flush_blocking() {
            Ok(()) => {
                tracing::info!(
                    generation = journal.generation(),
                    sessions = self.sessions.len(),
                    retained = self.retained.len(),
                    "MQTT state journal ready"
                );
                for path in &report.legacy_files {
                    move_legacy_aside(storage.as_ref(), path);
                }
            }
            Err(err) => tracing::error!("writing the startup checkpoint failed: {err}"),
        }
        Some(journal)
    }

    fn note_load(&self, report: &LoadReport) {
        let m = &self.state_metrics;
        m.quarantined
            .fetch_add(report.quarantined.len() as u64, Ordering::Relaxed);
        if let Some(torn) = &report.torn {
            m.torn_bytes.fetch_add(torn.bytes, Ordering::Relaxed);
            tracing::warn!(
                file = %torn.path.display(),
                at = torn.at,
                bytes = torn.bytes,
                "cut the torn tail of the MQTT state journal ({}): changes written there were never acknowledged",
                torn.why
            );
        }
        if !report.generations.is_empty() {
            tracing::info!(
                generations = ?report.generations,
                records = report.records,
                "replayed the MQTT state journal"
            );
        }
    }

    /// Turns the replayed model into live sessions and retained messages, within the limits.
    fn restore_model(&self, model: StateModel) {
        let settings = self.settings();
        let now = now_ms();
        let mut dropped = 0u64;
        let mut restored = 0usize;
        for (client_id, saved) in model.sessions {
            let expired = saved.expiry_secs == 0
                || (saved.expiry_secs != u32::MAX
                    && saved.disconnected_at_ms.is_some_and(|at| {
                        now.saturating_sub(at) >= u64::from(saved.expiry_secs) * 1000
                    }));
            if expired {
                continue;
            }
            if restored >= settings.max_sessions {
                dropped += 1;
                continue;
            }
            dropped += self.restore_session(client_id, saved, now);
            restored += 1;
        }
        let retained = model.retained.len();
        dropped += self.retained.restore(model.retained.into_values()) as u64;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "saved sessions, subscriptions, queued messages or retained messages exceed the [mqtt] limits; not restored"
            );
        }
        self.state_metrics
            .restore_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        if restored > 0 || retained > 0 {
            tracing::info!(
                sessions = restored,
                retained,
                skipped_records = model.skipped,
                "restored persistent MQTT sessions and retained messages"
            );
        }
    }

    /// Restores one session; returns how many of its parts the limits dropped.
    fn restore_session(&self, client_id: String, saved: ModelSession, now: u64) -> u64 {
        let settings = self.settings();
        let mut dropped = 0;
        let session = Arc::new(Session::new(
            self.sessions.next_key(),
            client_id.as_str().into(),
            self.queue_limits(),
            Arc::clone(&self.metrics),
        ));
        {
            let mut state = session.lock();
            state.expiry_secs = saved.expiry_secs;
            // A session that was online when the broker stopped went offline then.
            state.set_disconnected_at_ms(Some(saved.disconnected_at_ms.unwrap_or(now)));
            for (id, (released, delivery)) in saved.inflight {
                state
                    .inflight_mut()
                    .insert(id, Outbound { delivery, released });
                state.last_packet_id = state.last_packet_id.max(id);
            }
            let keep = settings.max_queued_messages;
            dropped += saved.queue.len().saturating_sub(keep) as u64;
            for delivery in saved.queue.into_iter().take(keep) {
                state.queue.push_back(delivery);
            }
            for id in saved.inbound_qos2 {
                state.inbound_qos2_mut().insert(id);
            }
        }
        let max_levels = settings.max_topic_levels;
        for (text, stored) in saved.subscriptions {
            let record = SubscriptionRecord::from(stored);
            let Some((filter, group)) = parse_subscription(&text, max_levels) else {
                tracing::warn!(
                    %client_id,
                    "saved subscription is not a valid filter within mqtt.max_topic_levels ({max_levels}); dropped"
                );
                dropped += 1;
                continue;
            };
            let fits = {
                let state = session.lock();
                super::limits::admit_subscription(
                    state.subscriptions.len(),
                    state.subscriptions.bytes(),
                    super::limits::subscription_cost(&text),
                    settings.max_subscriptions_per_client,
                    settings.max_subscription_bytes_per_client.bytes(),
                )
            };
            if fits.is_err() {
                dropped += 1;
                continue;
            }
            let mut entry = sub_entry(&session, record);
            // Deliveries are checked against the owner's permissions, as when it subscribed.
            entry.mailbox = self.auth.guard(
                crate::auth::Identity {
                    user: self.auth.owners.owner(&client_id).flatten().map(Into::into),
                    client_id: Arc::clone(&session.client_id),
                },
                filter_text(&text),
                entry.mailbox,
            );
            self.hub
                .subscribe(&filter, group.as_deref(), session.key, entry);
            session.lock().subscriptions.insert(text, record);
        }
        self.sessions
            .lock()
            .insert(Arc::clone(&session.client_id), session);
        dropped
    }

    /// Appends an image of every persistent session and retained message (a checkpoint's
    /// body), one entity at a time under its own lock, pausing while the journal's backlog is
    /// large.
    pub(super) fn write_checkpoint(&self, journal: &Journal) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            {
                let state = session.lock();
                if let Some(log) = state.log() {
                    log.record(|enc, sid| state.write_image(&session.client_id, enc, sid));
                }
            }
            journal.wait_backlog_below(BACKLOG_BYTES / 2);
        }
        self.retained.write_images(journal);
    }

    /// Compacts the journal if its current generation grew enough: a new generation with a
    /// checkpoint; the older ones are deleted once it is durable. Blocking.
    pub(super) fn compact_if_due(&self) {
        let Some(journal) = self.journal() else {
            return;
        };
        if !journal.wants_checkpoint() {
            return;
        }
        if let Some(generation) = journal.begin_checkpoint() {
            tracing::debug!(generation, "compacting the MQTT state journal");
            self.write_checkpoint(&journal);
            journal.end_checkpoint();
        }
    }

    /// Renders the metrics of saved state and of the limits.
    pub fn render_state(&self, text: &mut PromText) {
        let m = &self.state_metrics;
        text.counter(
            "edge_state_files_quarantined_total",
            "MQTT state files that could not be loaded at startup and were moved aside (*.damaged-*).",
            &[(&[], m.quarantined.load(Ordering::Relaxed))],
        );
        text.counter(
            "edge_state_restore_dropped_total",
            "Saved sessions, subscriptions, queued messages and retained messages not restored: over the [mqtt] limits.",
            &[(&[], m.restore_dropped.load(Ordering::Relaxed))],
        );
        if let Some(journal) = self.journal() {
            let s = journal.stats();
            text.counter(
                "edge_state_journal_written_bytes_total",
                "Bytes written to the MQTT state journal (flash wear).",
                &[(&[], s.bytes_written.load(Ordering::Relaxed))],
            );
            text.counter(
                "edge_state_journal_fsyncs_total",
                "fdatasync calls on the MQTT state journal.",
                &[(&[], s.fsyncs.load(Ordering::Relaxed))],
            );
            text.counter(
                "edge_state_journal_checkpoints_total",
                "Checkpoints written to the MQTT state journal (startup and compaction).",
                &[(&[], s.checkpoints.load(Ordering::Relaxed))],
            );
            text.gauge(
                "edge_state_journal_bytes",
                "Bytes of MQTT state journal files on disk.",
                &[(&[], s.disk_bytes.load(Ordering::Relaxed) as f64)],
            );
        }
        let failed = self.journal().is_none_or(|j| j.failure().is_some());
        text.gauge(
            "edge_state_journal_failed",
            "1 when MQTT session and retained changes are no longer saved (see the log).",
            &[(&[], f64::from(u8::from(failed)))],
        );
        text.gauge(
            "edge_mqtt_retained_bytes",
            "Bytes of retained messages held (what mqtt.max_retained_bytes counts).",
            &[(&[], self.retained.bytes() as f64)],
        );
        self.limits.render(text);
    }
}

/// Renames a migrated legacy file to `NAME.migrated` (kept for a downgrade, never read again).
fn move_legacy_aside(storage: &dyn Storage, path: &Path) {
    let target = path.with_file_name(format!(
        "{}.migrated",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    let target = if storage.open(&target).is_ok() {
        replay::aside_name(storage, path, "migrated").unwrap_or(target)
    } else {
        target
    };
    match storage.rename(path, &target) {
        Ok(()) => {
            tracing::info!(from = %path.display(), to = %target.display(), "legacy state file migrated to the journal; renamed")
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot rename the migrated legacy state file: {e}")
        }
    }
    if let Some(dir) = path.parent() {
        let _ = storage.sync_dir(dir);
    }
}
