//! How a connection ends: DISCONNECT, draining publishes on their way to the log, the last
//! packets, the will, and detaching the session.

use std::sync::Arc;
use std::time::Duration;

use edge_proto::mqtt::{Disconnect, MqttString, Packet, Properties, ProtocolVersion, ReasonCode};

use super::state::{Connection, Exit, Ingest};
use crate::metrics::front::inc;
use crate::mqtt::pace::Pace;

/// How long a shutdown waits for acknowledgements of records already on their way to disk.
const SHUTDOWN_ACK_DRAIN: Duration = Duration::from_secs(5);

/// How long a closing connection may take to flush its last packets.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

impl Connection {
    pub(super) fn on_disconnect(&mut self, disconnect: Disconnect) -> Result<(), Exit> {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry == 0 && expiry != 0 {
                return Err(Exit::Violation(
                    ReasonCode::ProtocolError,
                    "session expiry set on DISCONNECT after CONNECT had none".to_owned(),
                ));
            }
            let max =
                u32::try_from(self.settings.max_session_expiry.0.as_secs()).unwrap_or(u32::MAX);
            self.session.lock().expiry_secs = expiry.min(max);
        }
        Err(Exit::ClientDisconnect {
            with_will: disconnect.reason_code == ReasonCode::DisconnectWithWillMessage,
        })
    }

    /// Waits (at most [`SHUTDOWN_ACK_DRAIN`]) until the ingest queue has `done`, delivering
    /// locally what the log wrote and sending the acknowledgements that become due.
    async fn drain_ingest(&mut self, done: fn(&Ingest) -> bool) {
        let drain = async {
            if let Some(queue) = &mut self.ingest {
                queue.submit();
            }
            loop {
                if self.take_ingest().is_err() {
                    return;
                }
                // No queue: the client never published, nothing is on its way.
                let Some(queue) = self.ingest.as_deref_mut() else {
                    return;
                };
                if done(queue) || !queue.is_busy() {
                    return;
                }
                queue.progress().await;
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_ACK_DRAIN, drain).await;
    }

    pub(super) async fn finish(mut self: Box<Self>, exit: Exit) {
        // What waits for room is given up (dropped and counted); what the drain below
        // delivers does not wait (a pace made now would, so one that never waits is set).
        let metrics = &self.server.metrics;
        self.pace
            .get_or_insert_with(|| Box::new(Pace::new(false, Arc::clone(metrics))))
            .stop();
        match exit {
            // Shutdown: the acknowledgements whose records become durable in time go out, so
            // clients do not resend what is already safe.
            Exit::Shutdown => self.drain_ingest(Ingest::is_settled).await,
            Exit::Violation(..) => {}
            // The routed publishes already taken from the client (e.g. QoS 0 followed by
            // DISCONNECT) are stored and delivered locally like any other.
            _ => self.drain_ingest(Ingest::all_written).await,
        }
        if let Some(gate) = self.gate.take()
            && !matches!(
                tokio::time::timeout(CLOSE_FLUSH, gate.commit.durable()).await,
                Ok(Ok(()))
            )
        {
            // Acknowledgements of changes that are not saved must not go out.
            self.outbuf.clear();
        }
        let reason = match &exit {
            Exit::Kicked => Some(ReasonCode::SessionTakenOver),
            Exit::Busy(_) => Some(ReasonCode::QuotaExceeded),
            Exit::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Exit::Violation(reason, _) => Some(*reason),
            Exit::ClientDisconnect { .. } | Exit::Closed(_) => None,
        };
        if let Some(reason) = reason
            && self.version == ProtocolVersion::V5
        {
            let mut properties = Properties::default();
            if self.problem_info
                && let Exit::Violation(_, why) | Exit::Busy(why) = &exit
            {
                properties.reason_string = MqttString::try_from(why.as_str()).ok();
            }
            self.write(&Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties,
            }));
        }
        crate::listener::flush_and_close(&mut self.stream, &mut self.outbuf, CLOSE_FLUSH).await;

        match &exit {
            Exit::Violation(reason, why) => {
                inc(&self.server.metrics.protocol_errors);
                tracing::info!(peer = %self.peer, client_id = %self.session.client_id, reason = reason.name(), "MQTT client disconnected: {why}");
            }
            Exit::Busy(why) => {
                tracing::info!(peer = %self.peer, client_id = %self.session.client_id, "MQTT client disconnected: {why}");
            }
            Exit::Closed(why) => {
                tracing::debug!(peer = %self.peer, client_id = %self.session.client_id, "MQTT client gone: {why}")
            }
            other => {
                tracing::debug!(peer = %self.peer, client_id = %self.session.client_id, "MQTT client gone: {other:?}")
            }
        }

        let publish_will = match exit {
            Exit::ClientDisconnect { with_will } => with_will,
            Exit::Shutdown => false,
            Exit::Closed(_) | Exit::Kicked | Exit::Violation(..) | Exit::Busy(_) => true,
        };
        if let Some(will) = self.will.take()
            && publish_will
        {
            self.server.schedule_will(
                &self.session,
                self.generation,
                will.message,
                will.delay_secs,
            );
        }
        // Acks never sent are simply owed: the client resends those publishes.
        self.server.detach_session(&self.session, self.generation);
        // Publishers waiting for room in this session offer again (and are refused if the
        // session is offline now).
        self.session.room.made();
        self.server.metrics.connected(-1);
    }
}
