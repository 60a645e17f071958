//! CONNECT: the client's credentials are checked ([`crate::auth::Auth::login`]), its
//! pending place becomes a seat among `nats.max_connections`, and its options take effect.

use std::sync::Arc;

use edge_proto::nats::{Connect, ServerError};

use super::state::{Admitted, Connection, Exit};

impl Connection {
    /// CONNECT: logged in by the serve loop (it may wait: failed logins are delayed).
    pub(super) fn on_connect(&mut self, connect: Box<Connect>) -> Result<(), Exit> {
        self.pending_connect = Some(connect);
        Ok(())
    }

    pub(super) async fn login(&mut self, connect: Box<Connect>) -> Result<(), Exit> {
        let credentials = crate::auth::Credentials {
            user: connect.user.clone(),
            password: connect.pass.clone().map(String::into_bytes),
            token: connect.auth_token.clone(),
            ..Default::default()
        };
        let auth = Arc::clone(&self.server.auth);
        let login = auth.login(crate::auth::Protocol::Nats, self.peer.ip(), credentials);
        let user = match login.await {
            Ok(user) => user,
            Err(why) => {
                tracing::info!(peer = %self.peer, user = ?connect.user, "NATS authorization failed: {why}");
                return Err(self.error(ServerError::AuthorizationViolation));
            }
        };
        self.seat()?;
        {
            let mut state = self.outbox.lock();
            state.echo = connect.echo;
            state.headers = connect.headers;
        }
        if let Some(name) = connect.name.as_deref().filter(|n| !n.is_empty()) {
            self.client_id = name.into();
        }
        // The route key may depend on the client id, and what the ACL allowed on the identity.
        self.subject_facts = None;
        // Subscriptions made before are guarded under the identity they were made with.
        self.reply_route = None;
        self.logins += 1;
        self.permissions = auth.permissions(
            crate::auth::Protocol::Nats,
            crate::auth::Identity {
                user,
                client_id: Arc::clone(&self.client_id),
            },
        );
        tracing::debug!(peer = %self.peer, client = %self.client_id, "NATS client connected");
        self.connect = Some(connect);
        self.ok();
        Ok(())
    }

    /// After a successful login: trades the pending place for a seat (or refuses the client,
    /// `max_connections`) and lifts the small pre-CONNECT payload limit.
    pub(super) fn seat(&mut self) -> Result<(), Exit> {
        if let Admitted::Pending(pending) = &mut self.admitted
            && let Some(pending) = pending.take()
        {
            match pending.seat() {
                Ok(seat) => self.admitted = Admitted::Seated { _seat: seat },
                Err(refusal) => {
                    tracing::warn!(peer = %self.peer, "refusing NATS client: nats.{}", refusal.key());
                    return Err(self.error(ServerError::MaxConnectionsExceeded));
                }
            }
        }
        self.limits.max_payload = self.settings.max_payload.bytes() as usize;
        Ok(())
    }
}
